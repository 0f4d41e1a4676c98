//! A TCP relay on loopback in front of a server (the API server), which a test can cut and reopen:
//! a network partition of one client without touching the shared server.
//!
//! While cut, every open connection is closed and every new one is closed as soon as it is
//! accepted (the client sees its connection reset, as with a refused connect). Every chunk relayed
//! from a client to the server is recorded with its time, so a test can tell whether anything of
//! the cut-off client reached the server after a given moment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::{HarnessError, TestEnv};

/// A relay from a loopback port to `upstream`; stops relaying when dropped.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct RelayState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    cut: bool,
    connections: Vec<AbortHandle>,
    /// Client → server chunks relayed: when, and how many bytes.
    sent: Vec<(SystemTime, usize)>,
    accepted: u64,
    refused: u64,
}

impl RelayState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Relay {
    /// Listens on an ephemeral port of 127.0.0.1 and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Relay, std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(RelayState::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(Relay { addr, state, accept })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and closes new ones at once, until [`Relay::reopen`].
    pub fn cut(&self) {
        let mut inner = self.state.lock();
        inner.cut = true;
        for conn in inner.connections.drain(..) {
            conn.abort();
        }
    }

    /// Relays new connections again.
    pub fn reopen(&self) {
        self.state.lock().cut = false;
    }

    /// Bytes relayed from clients to the server at or after `since`.
    pub fn bytes_sent_since(&self, since: SystemTime) -> usize {
        self.state
            .lock()
            .sent
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, n)| n)
            .sum()
    }

    /// When a client last sent anything through the relay.
    pub fn last_sent(&self) -> Option<SystemTime> {
        self.state.lock().sent.last().map(|(at, _)| *at)
    }

    /// Connections relayed and connections closed at once while cut, so far.
    pub fn connections(&self) -> (u64, u64) {
        let inner = self.state.lock();
        (inner.accepted, inner.refused)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<RelayState>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.lock().cut {
            state.lock().refused += 1;
            // Dropped: the client's connection is closed before anything is relayed.
            continue;
        }
        let task = tokio::spawn(relay_one(client, upstream, state.clone()));
        let mut inner = state.lock();
        if inner.cut {
            // Cut while this one was being set up.
            task.abort();
            inner.refused += 1;
        } else {
            inner.accepted += 1;
            inner.connections.retain(|c| !c.is_finished());
            inner.connections.push(task.abort_handle());
        }
    }
}

async fn relay_one(client: TcpStream, upstream: SocketAddr, state: Arc<RelayState>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            state.lock().sent.push((SystemTime::now(), n));
        }
        let _ = server_write.shutdown().await;
    };
    let to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(to_server, to_client);
}

/// The API server's address from the test environment's kubeconfig (`https://127.0.0.1:<port>`).
pub fn api_server_addr(env: &TestEnv) -> Result<SocketAddr, HarnessError> {
    let server = kubeconfig_server(Path::new(env.var("EBB_KUBECONFIG")?))?;
    let hostport = server
        .strip_prefix("https://")
        .map(|s| s.trim_end_matches('/'))
        .ok_or_else(|| HarnessError::Kubeconfig(format!("not an https server: {server}")))?;
    hostport
        .parse()
        .map_err(|e| HarnessError::Kubeconfig(format!("server {server}: {e}")))
}

fn kubeconfig_server(path: &Path) -> Result<String, HarnessError> {
    let config =
        kube::config::Kubeconfig::read_from(path).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
    config
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .ok_or_else(|| HarnessError::Kubeconfig(format!("no server in {}", path.display())))
}

/// Writes a copy of the test environment's kubeconfig whose server is `https://{addr}` (same CA,
/// same credentials: the API server's certificate covers 127.0.0.1 on any port) to `path`.
pub fn kubeconfig_via(env: &TestEnv, addr: SocketAddr, path: &Path) -> Result<PathBuf, HarnessError> {
    let original = Path::new(env.var("EBB_KUBECONFIG")?);
    let server = kubeconfig_server(original)?;
    let text = std::fs::read_to_string(original).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
    let replaced = text.replace(&server, &format!("https://{addr}"));
    if replaced == text {
        return Err(HarnessError::Kubeconfig(format!(
            "{server} not found verbatim in {}",
            original.display()
        )));
    }
    std::fs::write(path, replaced).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
    Ok(path.to_path_buf())
}
