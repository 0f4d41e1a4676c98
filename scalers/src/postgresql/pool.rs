//! The connection pools of the postgresql triggers: one [`PgPool`] per [`PgTarget`] (server,
//! user, password, database, TLS mode), shared by every trigger naming the same target through
//! [`PgPools`] (a [`WeakPool`]: a pool closes its connections when its last trigger goes).
//!
//! A pool holds at most [`PgSettings::max_connections`] connections, made on first use, given
//! back after a clean query and dropped after any error (the next query makes a new one; a
//! reused connection the server had closed is retried once on a fresh one). Each query:
//! `START TRANSACTION READ ONLY`, `SET LOCAL statement_timeout`, the query prepared (its one
//! column's type checked), bound to a portal and executed for at most one row, then `ROLLBACK`.
//! The whole poll (waiting for a connection, dialling, the query) has a client-side deadline, and
//! every connection reads at most [`PgSettings::answer_cap`] bytes per query, reserved from the
//! process's in-flight budget first.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::sync::Semaphore;
use tokio_postgres::Client;

use super::connect::{DialError, ReadCap, dial, tls_config};
use super::conninfo::PgTarget;
use super::value::{Number, ValueError, accepts};
use crate::ScalerError;
use crate::common::budget::ByteBudget;
use crate::common::errors::error_chain;
use crate::common::pool::WeakPool;

/// The limits every pool works within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `SET LOCAL statement_timeout` of every query.
    pub statement_timeout: Duration,
    /// TCP connect, TLS and start-up of one connection (a shorter `connect_timeout` in the
    /// connection string wins).
    pub connect_timeout: Duration,
    /// Connections per pool.
    pub max_connections: usize,
    /// Bytes a connection may read per query.
    pub answer_cap: usize,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_connections: 2,
            answer_cap: 1024 * 1024,
        }
    }
}

impl PgSettings {
    /// The client-side deadline of one poll: a connect, the statement, and two seconds of slack
    /// for the round trips around it.
    pub fn poll_deadline(&self) -> Duration {
        self.connect_timeout + self.statement_timeout + Duration::from_secs(2)
    }
}

/// Every pool of a factory, one per target, alive while a trigger uses it.
#[derive(Debug)]
pub struct PgPools {
    pools: WeakPool<PgTarget, PgPool>,
    settings: PgSettings,
}

impl PgPools {
    /// No pools yet; each will work within `settings`.
    pub fn new(settings: PgSettings) -> Self {
        Self {
            pools: WeakPool::new(),
            settings,
        }
    }

    /// The pool of `target`, shared with every other user of the same target.
    pub fn pool(&self, target: &PgTarget) -> Arc<PgPool> {
        self.pools.get_or_insert_with(target.clone(), || {
            PgPool::new(target.clone(), self.settings.clone())
        })
    }

    /// How many pools are in use.
    pub fn live(&self) -> usize {
        self.pools.len()
    }
}

/// One connection and its read cap.
struct Conn {
    client: Client,
    cap: ReadCap,
}

/// The connections to one target. `Debug` shows the endpoint only.
pub struct PgPool {
    target: PgTarget,
    endpoint: String,
    settings: PgSettings,
    slots: Semaphore,
    idle: Mutex<Vec<Conn>>,
    tls: OnceLock<Result<Option<Arc<ClientConfig>>, String>>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A failed attempt: the connection is dropped.
struct Broken {
    error: tokio_postgres::Error,
    answer_too_large: bool,
}

impl PgPool {
    fn new(target: PgTarget, settings: PgSettings) -> Self {
        Self {
            endpoint: target.endpoint(),
            slots: Semaphore::new(settings.max_connections.max(1)),
            target,
            settings,
            idle: Mutex::new(Vec::new()),
            tls: OnceLock::new(),
        }
    }

    /// `postgresql://host:port/db`, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // Pushes and pops leave the list consistent, even if a holder panicked.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `query` and returns its one value, within the poll deadline.
    pub async fn read_value(&self, query: &str) -> Result<f64, ScalerError> {
        let deadline = self.settings.poll_deadline();
        match tokio::time::timeout(deadline, self.read_value_now(query)).await {
            Ok(result) => result,
            Err(_) => Err(ScalerError::timeout(&self.endpoint, deadline)),
        }
    }

    async fn read_value_now(&self, query: &str) -> Result<f64, ScalerError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ScalerError::unreachable(&self.endpoint, "the pool is closed"))?;
        let _bytes = ByteBudget::global()
            .try_reserve(self.settings.answer_cap)
            .map_err(|e| ScalerError::overloaded(&self.endpoint, e.to_string()))?;
        let idle = self.idle().pop().filter(|c| !c.client.is_closed());
        let reused = idle.is_some();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match self.attempt(&mut conn, query).await {
            Ok(result) => {
                self.give_back(conn);
                result
            }
            // A connection the server closed while idle: once more on a fresh one.
            Err(broken) if reused && broken.error.as_db_error().is_none() && !broken.answer_too_large => {
                drop(conn);
                let mut fresh = self.connect().await?;
                match self.attempt(&mut fresh, query).await {
                    Ok(result) => {
                        self.give_back(fresh);
                        result
                    }
                    Err(broken) => Err(self.query_error(broken)),
                }
            }
            Err(broken) => Err(self.query_error(broken)),
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle();
        if !conn.client.is_closed() && idle.len() < self.settings.max_connections {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, ScalerError> {
        let tls = self
            .tls
            .get_or_init(|| tls_config(self.target.ssl, self.target.ca.as_deref()))
            .clone()
            .map_err(|e| ScalerError::InvalidConfig(format!("postgresql: {e}")))?;
        let cap = ReadCap::new(self.settings.answer_cap);
        match dial(&self.target, tls.as_ref(), &cap, self.settings.connect_timeout).await {
            Ok(client) => Ok(Conn { client, cap }),
            Err(DialError::Postgres(e)) => Err(self.query_error(Broken {
                answer_too_large: cap.exhausted(),
                error: e,
            })),
            Err(e) => Err(ScalerError::unreachable(
                &self.endpoint,
                self.scrub(e.to_string()),
            )),
        }
    }

    /// One query on one connection: `Ok` with the value (or why the answer is unusable) when the
    /// connection is still good, `Err` when it must be dropped.
    async fn attempt(&self, conn: &mut Conn, query: &str) -> Result<Result<f64, ScalerError>, Broken> {
        conn.cap.refill(self.settings.answer_cap);
        let cap = conn.cap.clone();
        let broken = |error| Broken {
            error,
            answer_too_large: cap.exhausted(),
        };
        let tx = conn
            .client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(broken)?;
        let timeout = format!(
            "SET LOCAL statement_timeout = {}",
            self.settings.statement_timeout.as_millis()
        );
        let (_, statement) =
            tokio::try_join!(tx.batch_execute(&timeout), tx.prepare(query)).map_err(broken)?;
        let unusable = match statement.columns() {
            [column] if accepts(column.type_()) => None,
            [column] => Some(ValueError::Type(column.type_().name().to_string()).to_string()),
            columns => Some(format!(
                "the query returns {} columns; it must return one",
                columns.len()
            )),
        };
        if let Some(problem) = unusable {
            tx.rollback().await.map_err(broken)?;
            return Ok(Err(ScalerError::bad_response(&self.endpoint, problem)));
        }
        let portal = tx.bind(&statement, &[]).await.map_err(broken)?;
        let rows = tx.query_portal(&portal, 1).await.map_err(broken)?;
        drop(portal);
        tx.rollback().await.map_err(broken)?;
        let bad = |problem: String| Err(ScalerError::bad_response(&self.endpoint, problem));
        Ok(
            match rows.first().map(|row| row.try_get::<_, Option<Number>>(0)) {
                None => bad("the query returned no rows".to_string()),
                Some(Ok(None)) => bad("the query returned NULL".to_string()),
                Some(Ok(Some(Number(Ok(value))))) => Ok(value),
                Some(Ok(Some(Number(Err(e))))) => bad(e.to_string()),
                Some(Err(e)) => bad(self.scrub(error_chain(&e))),
            },
        )
    }

    /// A failed attempt as a [`ScalerError`]: authentication failures are `Unauthorized`, the
    /// statement timeout is `Timeout`, other server errors `BadResponse` with their SQLSTATE, and
    /// the rest (the socket, TLS) `Unreachable`. The password is scrubbed from every message.
    fn query_error(&self, broken: Broken) -> ScalerError {
        if broken.answer_too_large {
            return ScalerError::bad_response(
                &self.endpoint,
                format!(
                    "the server's answer is larger than {} bytes",
                    self.settings.answer_cap
                ),
            );
        }
        let Some(db) = broken.error.as_db_error() else {
            return ScalerError::unreachable(&self.endpoint, self.scrub(error_chain(&broken.error)));
        };
        let code = db.code().code();
        let message = self.scrub(format!("{} (SQLSTATE {code})", bounded(db.message())));
        match code {
            c if c.starts_with("28") => ScalerError::unauthorized(&self.endpoint, message),
            "57014" => ScalerError::timeout(&self.endpoint, self.settings.statement_timeout),
            _ => ScalerError::bad_response(&self.endpoint, message),
        }
    }

    /// `text` with the target's password replaced by `<redacted>`.
    fn scrub(&self, text: String) -> String {
        match self.target.password.as_deref() {
            Some(p) if p.len() >= 3 && text.contains(p) => text.replace(p, "<redacted>"),
            _ => text,
        }
    }
}

/// At most 300 characters of a server's message.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgresql::conninfo::parse_connection_string;

    #[test]
    fn equal_targets_share_a_pool_while_used() {
        let pools = PgPools::new(PgSettings::default());
        let a = parse_connection_string("host=h user=u password=one").unwrap();
        let b = parse_connection_string("host=h user=u password=two").unwrap();
        let (p1, p2, p3) = (pools.pool(&a), pools.pool(&a.clone()), pools.pool(&b));
        assert!(Arc::ptr_eq(&p1, &p2));
        assert!(!Arc::ptr_eq(&p1, &p3), "another password is another pool");
        assert_eq!(pools.live(), 2);
        drop((p1, p2));
        assert_eq!(pools.live(), 1);
        assert!(!format!("{p3:?}").contains("two"));
    }

    #[test]
    fn messages_are_bounded_and_scrubbed() {
        let pool = PgPool::new(
            parse_connection_string("host=h user=u password=hunter2").unwrap(),
            PgSettings::default(),
        );
        assert_eq!(pool.scrub("x hunter2 y".into()), "x <redacted> y");
        assert_eq!(bounded(&"a".repeat(400)).chars().count(), 301);
        assert_eq!(PgSettings::default().poll_deadline(), Duration::from_secs(17));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let target =
            parse_connection_string(&format!("host=127.0.0.1 port={port} user=u sslmode=disable")).unwrap();
        let pool = PgPool::new(target, PgSettings::default());
        let e = pool.read_value("SELECT 1").await.unwrap_err();
        assert_eq!(e.kind(), "unreachable", "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
