//! One connection to one Redis server + credentials + database + TLS, shared by every trigger on
//! it, and pipelining: every read asked for while a round is on the wire waits, and all of them
//! go out together in the next round (one write of all their commands, then their replies in
//! order), so N triggers sampled together and the activity watcher's read of all of them each
//! cost one round trip.
//!
//! The connection is opened on first use and again after any failure (a failed round drops it:
//! its replies could be out of step). Every round, connecting included, is bounded by the
//! timeout; every reply by [`Limits::DEFAULT`], and the bytes a round holds beyond its first read
//! are reserved from the process-wide in-flight budget ([`ByteBudget::global`]) as they arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::config::RedisServer;
use super::resp::{Command, Limits, Reply, command, decode, encode};
use crate::ScalerError;
use crate::common::budget::{BudgetError, ByteBudget, Reservation};
use crate::common::errors::error_chain;

/// How much a read asks the socket for at once (and reserves from the budget).
const READ_CHUNK: usize = 16 * 1024;

/// A byte stream to the server: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection and its read buffer.
struct Link {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// What one round trip failed with; the connection is dropped after any of these.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error(transparent)]
    Decode(#[from] super::resp::DecodeError),
    #[error(transparent)]
    Overloaded(#[from] BudgetError),
}

impl Link {
    /// Writes every command at once, then reads one reply per command, reserving from `budget`
    /// what the read buffer holds beyond its first chunk.
    async fn exchange(
        &mut self,
        commands: &[&Command],
        budget: &ByteBudget,
    ) -> Result<Vec<Reply>, LinkError> {
        let mut out = Vec::new();
        for c in commands {
            encode(c, &mut out);
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        let mut replies = Vec::with_capacity(commands.len());
        let mut reserved: Vec<Reservation> = Vec::new();
        while replies.len() < commands.len() {
            match decode(&self.buf, &Limits::DEFAULT)? {
                Some((reply, used)) => {
                    self.buf.drain(..used);
                    replies.push(reply);
                }
                None => {
                    if self.buf.len() + READ_CHUNK > READ_CHUNK * (reserved.len() + 1) {
                        reserved.push(budget.try_reserve(READ_CHUNK)?);
                    }
                    self.buf.reserve_exact(READ_CHUNK);
                    if self.io.read_buf(&mut self.buf).await? == 0 {
                        return Err(LinkError::Closed);
                    }
                }
            }
        }
        if self.buf.capacity() > 2 * READ_CHUNK {
            self.buf.shrink_to(READ_CHUNK);
        }
        Ok(replies)
    }
}

/// One read waiting for its round.
struct Job {
    commands: Vec<Command>,
    done: oneshot::Sender<Result<Vec<Reply>, ScalerError>>,
}

/// Counters of a connection, for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Connections opened (including the first).
    pub connects: u64,
    /// Round trips made (each one pipeline of every waiting read).
    pub rounds: u64,
    /// Commands sent in those rounds.
    pub commands: u64,
}

/// The shared connection of one [`RedisServer`] (see the [module docs](self)).
pub struct Connection {
    server: RedisServer,
    endpoint: String,
    timeout: Duration,
    budget: ByteBudget,
    queue: Mutex<Vec<Job>>,
    link: tokio::sync::Mutex<Option<Link>>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, ScalerError>>,
    connects: AtomicU64,
    rounds: AtomicU64,
    commands: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one push or take: a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// A connection to `server`, opened on first use; `timeout` bounds each round trip
    /// (connecting included). Needs no async runtime.
    pub fn new(server: RedisServer, timeout: Duration) -> Self {
        Self {
            endpoint: server.endpoint(),
            server,
            timeout,
            budget: ByteBudget::global().clone(),
            queue: Mutex::new(Vec::new()),
            link: tokio::sync::Mutex::new(None),
            tls: OnceLock::new(),
            connects: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        }
    }

    /// The endpoint as errors show it (no credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The counters so far.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            connects: self.connects.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        }
    }

    /// Sends `commands` in the next round (together with every other read waiting for it) and
    /// returns their replies, in order. Error replies are replies; a failed round (connect,
    /// authentication, I/O, timeout, a malformed reply) is an error for every read in it.
    pub async fn execute(&self, commands: Vec<Command>) -> Result<Vec<Reply>, ScalerError> {
        let (done, mut result) = oneshot::channel();
        lock(&self.queue).push(Job { commands, done });
        let mut link = self.link.lock().await;
        // The round before may have carried this read.
        match result.try_recv() {
            Ok(replies) => return replies,
            Err(oneshot::error::TryRecvError::Closed) => return Err(self.abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(&mut *lock(&self.queue));
        self.round(&mut link, jobs).await;
        drop(link);
        result.await.unwrap_or_else(|_| Err(self.abandoned()))
    }

    fn abandoned(&self) -> ScalerError {
        ScalerError::unreachable(&self.endpoint, "the round carrying this read was cancelled")
    }

    /// One round trip for `jobs`; answers each of them.
    async fn round(&self, slot: &mut Option<Link>, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let commands: Vec<&Command> = jobs.iter().flat_map(|j| j.commands.iter()).collect();
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(commands.len() as u64, Ordering::Relaxed);
        // The link is taken out for the round and put back only after a complete exchange: a
        // failed or cancelled round leaves no connection whose replies could be out of step.
        let exchange = async {
            let reused = slot.take();
            let was_reused = reused.is_some();
            let mut link = match reused {
                Some(link) => link,
                None => self.connect().await?,
            };
            let replies = match link.exchange(&commands, &self.budget).await {
                Ok(replies) => replies,
                // A kept connection the server closed meanwhile (restart, idle `timeout`,
                // CLIENT KILL): dial once more. Every command ebb sends only reads.
                Err(LinkError::Io(_) | LinkError::Closed) if was_reused => {
                    tracing::debug!(server = %self.endpoint, "redis connection lost: reconnecting");
                    link = self.connect().await?;
                    link.exchange(&commands, &self.budget)
                        .await
                        .map_err(|e| self.link_error(&e))?
                }
                Err(e) => return Err(self.link_error(&e)),
            };
            Ok::<_, ScalerError>((link, replies))
        };
        let outcome = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ScalerError::timeout(&self.endpoint, self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((link, replies))) => {
                *slot = Some(link);
                Ok(replies)
            }
        };
        match outcome {
            Err(e) => {
                for job in jobs {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for job in jobs {
                    let mine: Vec<Reply> = replies.by_ref().take(job.commands.len()).collect();
                    let _ = job.done.send(Ok(mine));
                }
            }
        }
    }

    fn link_error(&self, e: &LinkError) -> ScalerError {
        match e {
            LinkError::Decode(e) => ScalerError::bad_response(&self.endpoint, e.to_string()),
            LinkError::Overloaded(e) => ScalerError::overloaded(&self.endpoint, e.to_string()),
            _ => ScalerError::unreachable(&self.endpoint, error_chain(e)),
        }
    }

    fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ScalerError> {
        let Some(settings) = &self.server.tls else {
            return Ok(None);
        };
        self.tls
            .get_or_init(|| {
                settings
                    .client_config()
                    .map(Arc::new)
                    .map_err(|e| ScalerError::InvalidConfig(format!("redis TLS: {e}")))
            })
            .clone()
            .map(Some)
    }

    /// Opens the connection: TCP, TLS when asked, then `AUTH`, `SELECT` and `CLIENT SETNAME`
    /// in one round trip.
    async fn connect(&self) -> Result<Link, ScalerError> {
        let unreachable =
            |e: &(dyn std::error::Error + 'static)| ScalerError::unreachable(&self.endpoint, error_chain(e));
        let tls = self.tls_config()?;
        let tcp = TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.server.host.clone())
                    .map_err(|e| ScalerError::InvalidConfig(format!("redis TLS: server name: {e}")))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        let mut e = unreachable(&e);
                        if let (ScalerError::Unreachable { message, .. }, Some(note)) =
                            (&mut e, self.server.tls.as_ref().and_then(|t| t.roots_problem()))
                        {
                            message.push_str(&format!(" ({note})"));
                        }
                        e
                    })?;
                Box::new(stream)
            }
        };
        let mut link = Link { io, buf: Vec::new() };
        let mut hello = Vec::new();
        if let Some(password) = &self.server.password {
            hello.push(match &self.server.username {
                Some(user) => command([b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => command([b"AUTH", password.as_bytes()]),
            });
        }
        if self.server.database != 0 {
            let db = self.server.database.to_string();
            hello.push(command([b"SELECT", db.as_bytes()]));
        }
        hello.push(command([b"CLIENT", b"SETNAME", b"ebb-scaler"]));
        let refs: Vec<&Command> = hello.iter().collect();
        let replies = link
            .exchange(&refs, &self.budget)
            .await
            .map_err(|e| self.link_error(&e))?;
        for (sent, reply) in hello.iter().zip(&replies) {
            let Reply::Error(line) = reply else { continue };
            let code = reply.error_code().unwrap_or("");
            match sent[0].as_slice() {
                // Never echo the AUTH command: the server's line is about the credentials only.
                b"AUTH" => {
                    return Err(ScalerError::unauthorized(
                        &self.endpoint,
                        format!("authentication failed ({code})"),
                    ));
                }
                b"SELECT" => {
                    return Err(ScalerError::bad_response(
                        &self.endpoint,
                        format!("cannot select database {}: {line}", self.server.database),
                    ));
                }
                // A name is only for `CLIENT LIST`: a user not allowed to set it still reads.
                _ => {}
            }
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(server = %self.endpoint, "redis connection opened");
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    fn server(port: u16, password: Option<&str>) -> RedisServer {
        RedisServer {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: password.map(str::to_string),
            database: 0,
            tls: None,
        }
    }

    /// A fake server that answers every command line-by-line from `answer` (one RESP reply per
    /// command), counting the reads it got in one go.
    async fn fake(answer: fn(&[String]) -> String) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    // Each command: *n, then n × ($len, arg).
                    while let Ok(Some(head)) = lines.next_line().await {
                        let n: usize = head.trim_start_matches('*').parse().unwrap_or(0);
                        let mut args = Vec::new();
                        for _ in 0..n {
                            let _len = lines.next_line().await;
                            args.push(lines.next_line().await.unwrap().unwrap_or_default());
                        }
                        if write.write_all(answer(&args).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn concurrent_reads_share_rounds_and_get_their_own_replies() {
        let port = fake(|args| match args[0].as_str() {
            "LLEN" => format!(":{}\r\n", args[1].len()),
            _ => "+OK\r\n".into(),
        })
        .await;
        let conn = Arc::new(Connection::new(server(port, None), Duration::from_secs(2)));
        let keys = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g", "hh"];
        let reads = keys.iter().map(|k| {
            let conn = conn.clone();
            async move { conn.execute(vec![command([b"LLEN", k.as_bytes()])]).await }
        });
        let results = futures::future::join_all(reads).await;
        for (key, result) in keys.iter().zip(results) {
            assert_eq!(result.unwrap(), [Reply::Int(key.len() as i64)]);
        }
        let stats = conn.stats();
        assert_eq!(stats.connects, 1);
        assert_eq!(stats.commands, 8);
        // The first read goes alone; the seven that queued behind it share the next round.
        assert!(stats.rounds <= 2, "{stats:?}");
    }

    #[tokio::test]
    async fn auth_failure_unreachable_and_timeout_are_errors() {
        let port = fake(|args| match args[0].as_str() {
            "AUTH" => "-WRONGPASS invalid username-password pair or user is disabled.\r\n".into(),
            _ => "+OK\r\n".into(),
        })
        .await;
        let conn = Connection::new(server(port, Some("hunter2")), Duration::from_secs(2));
        let e = conn.execute(vec![command([b"PING"])]).await.unwrap_err();
        assert!(matches!(e, ScalerError::Unauthorized { .. }), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = listener.local_addr().unwrap().port();
        drop(listener);
        let conn = Connection::new(server(closed, None), Duration::from_secs(2));
        let e = conn.execute(vec![command([b"PING"])]).await.unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let conn = Connection::new(server(port, None), Duration::from_millis(300));
        let e = conn.execute(vec![command([b"PING"])]).await.unwrap_err();
        assert!(matches!(e, ScalerError::Timeout { .. }), "{e}");
        drop(silent);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_by_the_server_is_redialled_in_the_same_round() {
        use tokio::io::AsyncReadExt;
        // Closes every connection after its first LLEN reply.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let mut out = String::new();
                        for cmd in text.split('*').skip(1) {
                            out.push_str(if cmd.contains("LLEN") { ":5\r\n" } else { "+OK\r\n" });
                        }
                        let _ = socket.write_all(out.as_bytes()).await;
                        if text.contains("LLEN") {
                            return;
                        }
                    }
                });
            }
        });
        let conn = Connection::new(server(port, None), Duration::from_secs(2));
        for _ in 0..3 {
            let replies = conn.execute(vec![command([b"LLEN", b"k"])]).await.unwrap();
            assert_eq!(replies, [Reply::Int(5)]);
        }
        assert_eq!(
            conn.stats().connects,
            3,
            "one redial per lost connection, no error"
        );
    }

    #[tokio::test]
    async fn a_large_answer_is_held_against_the_byte_budget() {
        let port = fake(|args| match args[0].as_str() {
            "GET" => format!("${}\r\n{}\r\n", 40_000, "x".repeat(40_000)),
            _ => "+OK\r\n".into(),
        })
        .await;
        let mut conn = Connection::new(server(port, None), Duration::from_secs(2));
        conn.budget = ByteBudget::new(READ_CHUNK);
        let e = conn.execute(vec![command([b"GET", b"big"])]).await.unwrap_err();
        assert!(matches!(e, ScalerError::Overloaded { .. }), "{e}");
        assert_eq!(conn.budget.free(), READ_CHUNK, "given back");
        conn.budget = ByteBudget::new(4 * READ_CHUNK);
        let replies = conn.execute(vec![command([b"GET", b"big"])]).await.unwrap();
        assert!(matches!(&replies[0], Reply::Bulk(b) if b.len() == 40_000));
        assert_eq!(conn.budget.free(), 4 * READ_CHUNK);
    }

    #[tokio::test]
    async fn a_failed_round_drops_the_connection_and_the_next_one_reconnects() {
        // Answers garbage to the first LLEN of each connection, then integers.
        let port = fake(|args| match args[0].as_str() {
            "LLEN" if args[1] == "bad" => "?garbage\r\n".into(),
            "LLEN" => ":1\r\n".into(),
            _ => "+OK\r\n".into(),
        })
        .await;
        let conn = Connection::new(server(port, None), Duration::from_secs(2));
        let e = conn.execute(vec![command([b"LLEN", b"bad"])]).await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        let ok = conn.execute(vec![command([b"LLEN", b"good"])]).await.unwrap();
        assert_eq!(ok, [Reply::Int(1)]);
        assert_eq!(conn.stats().connects, 2);
    }
}
