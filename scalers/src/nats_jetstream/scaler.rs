//! The `nats-jetstream` scaler: a JetStream consumer's lag, `num_pending + num_ack_pending`.
//!
//! Two ways to read the consumer (see [`crate::nats_jetstream`] for the parameters):
//!
//! - **Monitoring endpoint** (KEDA's way, `natsServerMonitoringEndpoint`):
//!   `GET http(s)://<endpoint>/jsz?acc=<account>&config=true&consumers=true`, then the consumer is
//!   looked up under account → stream → consumer. In a cluster (`meta_cluster.cluster_size > 1`)
//!   only the consumer's leader reports correct numbers, so the leader is found as KEDA does:
//!   the endpoint's `/varz` gives the nodes (`connect_urls`, or, when the servers do not advertise,
//!   `cluster.urls` plus `server_name` with the headless-service naming `<node>.<endpoint host>`),
//!   each advertised node's `/varz` gives its `server_name`, and the node whose name is the
//!   consumer's `cluster.leader` in its own `/jsz` is the one read. That node is cached per
//!   (endpoint, account, stream, consumer) and asked directly on the next polls, until it stops
//!   reporting the consumer, reports another leader, or cannot be reached: then the leader is
//!   found again. The HTTP side is the factory's shared [`MetricsApiClient`] (pooled connections,
//!   one request in flight per URL).
//! - **JetStream API** (ebb's addition, `natsServerURL`): `$JS.API.CONSUMER.INFO.<stream>.<consumer>`
//!   through async-nats over the client port. The server routes it to the consumer's leader, and the
//!   answer is about this one consumer rather than the whole account. One connection per server
//!   URL + credentials is shared by every trigger of a factory; async-nats reconnects it by itself.
//!   Credentials come from the URL: `nats://user:password@host:4222` (user and password) or
//!   `nats://token@host:4222` (token), percent-decoded.
//!
//! # Cold activation
//!
//! Monitoring triggers register, when built, with one watcher per (endpoint, account), shared by
//! every trigger of the factory on that endpoint and account, and unregister when dropped. While
//! it has triggers, the watcher's task reads the endpoint's `/jsz` once a second (the same query
//! as the polls) and computes each trigger's activity as [`Scaler::sample`] does
//! (`num_pending + num_ack_pending > activationLagThreshold`); a change flips the trigger's
//! [`Scaler::activity_changes`] channel, so a ScaledObject at zero polls about a second after its
//! first message instead of at its next `pollingInterval` tick. In a cluster the numbers are
//! read from each consumer's leader as the polls cached it (one more request per leader node);
//! a consumer without a cached leader waits for its poll. Cost: 1 + (leader nodes) requests per
//! second per endpoint and account, whatever the number of triggers. A failed or inconclusive
//! read flips nothing (errors are the polls' to report); after failures the watcher backs off
//! up to 5 s; with no trigger left its task ends. `natsServerURL` triggers stay poll-only: the
//! JetStream API has no per-server batch (`CONSUMER.LIST` is per stream).
//!
//! Errors never show credentials: URLs are shown with `user:password@` masked.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;
use tokio::sync::{OnceCell, watch};

use crate::metrics_api::scaler::{Endpoint, MetricsApiClient};
use crate::params::{ParsedParams, Thresholds, mask_userinfo};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample, is_active};

/// Characters left as they are in the `acc=` query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A consumer's backlog as JetStream reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Messages of the stream not yet delivered to the consumer.
    pub num_pending: u64,
    /// Messages delivered but not yet acknowledged.
    pub num_ack_pending: u64,
}

impl ConsumerLag {
    /// KEDA's lag: `num_pending + num_ack_pending` (saturating).
    pub fn total(&self) -> u64 {
        self.num_pending.saturating_add(self.num_ack_pending)
    }
}

/// What one node's `/jsz` says about one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JszConsumer {
    /// The consumer's lag as this node sees it (only the leader's is right in a cluster).
    pub lag: ConsumerLag,
    /// The name of the consumer's leader (`cluster.leader`), when the server is clustered.
    pub leader: Option<String>,
}

/// The parts of one `/jsz` answer the scaler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JszView {
    /// `meta_cluster.cluster_size`; 0 when the server is not clustered.
    pub cluster_size: u64,
    /// The consumer, when this node reports it.
    pub consumer: Option<JszConsumer>,
}

/// Reads a `/jsz?consumers=true&config=true` document: the cluster size and the consumer
/// `consumer` of stream `stream` in the account whose name or id is one of `accounts`. An error
/// says what was malformed; a consumer that is not there is `consumer: None`, not an error.
pub fn read_jsz(doc: &Json, accounts: &[&str], stream: &str, consumer: &str) -> Result<JszView, String> {
    let jsz = Jsz::deserialize(doc).map_err(|e| format!("not a /jsz answer: {e}"))?;
    let cluster_size = jsz.meta_cluster.and_then(|m| m.cluster_size).unwrap_or(0);
    let found = jsz
        .account_details
        .iter()
        .filter(|a| accounts.iter().any(|k| *k == a.name || *k == a.id))
        .flat_map(|a| &a.stream_detail)
        .filter(|s| s.name == stream || s.config.as_ref().is_some_and(|c| c.name == stream))
        .flat_map(|s| &s.consumer_detail)
        .find(|c| c.name == consumer);
    let consumer = match found {
        None => None,
        Some(c) => {
            let (Some(num_pending), Some(num_ack_pending)) = (c.num_pending, c.num_ack_pending) else {
                return Err(format!(
                    "consumer {consumer:?} of stream {stream:?} has no num_pending or num_ack_pending"
                ));
            };
            Some(JszConsumer {
                lag: ConsumerLag {
                    num_pending,
                    num_ack_pending,
                },
                leader: c
                    .cluster
                    .as_ref()
                    .and_then(|cl| cl.leader.clone())
                    .filter(|l| !l.is_empty()),
            })
        }
    };
    Ok(JszView {
        cluster_size,
        consumer,
    })
}

/// `null` (as Go encodes an empty slice or map) reads as the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
struct Jsz {
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
    #[serde(default, deserialize_with = "nullable")]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct MetaCluster {
    #[serde(default)]
    cluster_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    config: Option<NamedConfig>,
    #[serde(default, deserialize_with = "nullable")]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct NamedConfig {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct ConsumerDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    num_pending: Option<u64>,
    #[serde(default)]
    num_ack_pending: Option<u64>,
    #[serde(default)]
    cluster: Option<ClusterInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterInfo {
    #[serde(default)]
    leader: Option<String>,
}

/// The parts of `/varz` used to find the cluster's nodes.
#[derive(Debug, Default, Deserialize)]
struct Varz {
    #[serde(default, deserialize_with = "nullable")]
    server_name: String,
    #[serde(default, deserialize_with = "nullable")]
    connect_urls: Vec<String>,
    #[serde(default)]
    cluster: Option<VarzCluster>,
}

#[derive(Debug, Default, Deserialize)]
struct VarzCluster {
    #[serde(default, deserialize_with = "nullable")]
    urls: Vec<String>,
}

/// Splits `host[:port]` (also `[v6]:port`) into host and port.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let port = authority[end + 1..].strip_prefix(':').filter(|p| !p.is_empty());
            return (&authority[..=end], port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// The host of a node address as `/varz` lists it (`host:port`, maybe with a scheme or
/// `user@`).
fn node_host(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    split_host_port(rest).0
}

/// One node to ask in leader discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// Its `server_name`, when known without asking its `/varz` (the non-advertised naming).
    name: Option<String>,
    /// Its monitoring `host:port`.
    authority: String,
}

/// The monitoring side of one trigger: where and what to ask.
#[derive(Clone)]
struct Monitoring {
    scheme: &'static str,
    /// `natsServerMonitoringEndpoint` as configured: `host[:port]`.
    authority: String,
    /// The `acc=` value: `accountID`, else `account`.
    account: String,
    /// Names an account detail may carry: `account` and `accountID`.
    accounts: Vec<String>,
}

impl fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitoring")
            .field("endpoint", &mask_userinfo(&self.url(&self.authority, "")))
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Monitoring {
    fn url(&self, authority: &str, path: &str) -> String {
        format!("{}://{authority}{path}", self.scheme)
    }

    fn jsz_url(&self, authority: &str) -> String {
        let acc = utf8_percent_encode(&self.account, QUERY_VALUE);
        self.url(authority, &format!("/jsz?acc={acc}&config=true&consumers=true"))
    }

    /// The nodes to ask, from the configured endpoint's `/varz`, as KEDA finds them.
    fn candidates(&self, varz: &Varz) -> Vec<Candidate> {
        let (_, port) = split_host_port(&self.authority);
        let mut out: Vec<Candidate> = Vec::new();
        let mut push = |c: Candidate| {
            if !c.authority.is_empty() && !out.iter().any(|o| o.authority == c.authority) {
                out.push(c);
            }
        };
        if !varz.connect_urls.is_empty() {
            // Advertised client URLs: the node's host with the monitoring port; its name comes
            // from its own /varz.
            for address in &varz.connect_urls {
                let host = node_host(address);
                let authority = match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                };
                push(Candidate {
                    name: None,
                    authority,
                });
            }
        } else {
            // Not advertised (e.g. `no_advertise`): the headless-service pattern, node name = first
            // DNS label, reached as `<node>.<endpoint host:port>`.
            let cluster_urls = varz.cluster.as_ref().map(|c| c.urls.as_slice()).unwrap_or(&[]);
            for address in cluster_urls.iter().chain(std::iter::once(&varz.server_name)) {
                let host = node_host(address);
                let node = host.split('.').next().unwrap_or(host);
                if node.is_empty() {
                    continue;
                }
                push(Candidate {
                    name: Some(node.to_string()),
                    authority: format!("{node}.{}", self.authority),
                });
            }
        }
        out
    }
}

/// Cache key of a consumer's leader: endpoint (with scheme), account, stream, consumer.
type LeaderKey = (String, String, String, String);

/// A cached leader: the node's monitoring `host:port` and its `server_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedLeader {
    authority: String,
    name: String,
}

/// A NATS client URL with its credentials taken out.
#[derive(Clone)]
struct NatsServer {
    /// The URL without credentials (what async-nats connects to; safe to show).
    url: String,
    auth: NatsAuth,
}

#[derive(Clone)]
enum NatsAuth {
    None,
    UserPassword(String, String),
    Token(String),
}

impl NatsServer {
    fn parse(raw: &str) -> Result<Self, ScalerError> {
        let invalid = || {
            ScalerError::InvalidConfig(
                "nats-jetstream: natsServerURL must be a NATS client URL like nats://host:4222".to_string(),
            )
        };
        let mut url = url::Url::parse(raw).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = match (url.username(), url.password()) {
            ("", None) => NatsAuth::None,
            (token, None) => NatsAuth::Token(decode(token)),
            (user, Some(password)) => NatsAuth::UserPassword(decode(user), decode(password)),
        };
        // Neither fails for a URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        Ok(Self {
            url: url.as_str().trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// The pool key: the URL and a digest of the credentials (never the credentials).
    fn key(&self) -> NatsKey {
        let credentials = match &self.auth {
            NatsAuth::None => None,
            NatsAuth::UserPassword(user, password) => Some(digest(&["user-password", user, password])),
            NatsAuth::Token(token) => Some(digest(&["token", token])),
        };
        (self.url.clone(), credentials)
    }
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            NatsAuth::None => "none",
            NatsAuth::UserPassword(..) => "user and password",
            NatsAuth::Token(_) => "token",
        };
        f.debug_struct("NatsServer")
            .field("url", &self.url)
            .field("auth", &auth)
            .finish()
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

/// What every nats-jetstream trigger of a factory shares: the HTTP client for the monitoring
/// endpoints, the cached consumer leaders, and one NATS connection per server URL + credentials.
pub struct NatsJetStreamClients {
    http: Arc<MetricsApiClient>,
    timeout: Duration,
    leaders: Mutex<HashMap<LeaderKey, CachedLeader>>,
    connections: Mutex<HashMap<NatsKey, Arc<OnceCell<async_nats::Client>>>>,
    /// One activity watcher per (monitoring endpoint, account); alive while a scaler holds it.
    watchers: Mutex<HashMap<WatcherKey, Weak<JszWatcher>>>,
    /// Watcher rounds made so far (all watchers).
    watch_rounds: AtomicU64,
    /// `/jsz` requests the watchers made so far.
    watch_requests: AtomicU64,
    /// How often a watcher makes a round; zero disables the watchers.
    watch_tick: Duration,
}

impl NatsJetStreamClients {
    /// Shares `http` for the monitoring endpoints; `timeout` bounds a NATS connect and each
    /// JetStream request. Needs no async runtime (connections are made on first use).
    pub fn new(http: Arc<MetricsApiClient>, timeout: Duration) -> Self {
        Self {
            http,
            timeout,
            leaders: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            watch_rounds: AtomicU64::new(0),
            watch_requests: AtomicU64::new(0),
            watch_tick: WATCH_TICK,
        }
    }

    /// Sets how often each monitoring watcher reads `/jsz` (default [`WATCH_TICK`]); zero
    /// disables the watchers (monitoring triggers are then poll-only and
    /// [`Scaler::activity_changes`] never fires).
    pub fn with_watch_tick(mut self, tick: Duration) -> Self {
        self.watch_tick = tick;
        self
    }

    /// What the monitoring activity watchers are doing now.
    pub fn watcher_stats(&self) -> WatcherStats {
        let live: Vec<Arc<JszWatcher>> = lock(&self.watchers).values().filter_map(Weak::upgrade).collect();
        let (mut triggers, mut running) = (0, 0);
        for w in &live {
            let state = lock(&w.state);
            triggers += state.triggers.len();
            running += usize::from(state.running);
        }
        WatcherStats {
            watchers: live.len(),
            triggers,
            running,
            rounds: self.watch_rounds.load(Ordering::Relaxed),
            requests: self.watch_requests.load(Ordering::Relaxed),
        }
    }

    /// The watcher of this endpoint and account, created on first use.
    fn watcher(&self, m: &Monitoring) -> Arc<JszWatcher> {
        let key: WatcherKey = (m.url(&m.authority, ""), m.account.clone());
        let mut watchers = lock(&self.watchers);
        if let Some(w) = watchers.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(JszWatcher {
            monitoring: m.clone(),
            state: Mutex::new(WatcherState::default()),
        });
        watchers.insert(key, Arc::downgrade(&w));
        w
    }

    /// How many NATS connections (server URL + credentials) are pooled.
    pub fn connection_count(&self) -> usize {
        lock(&self.connections).len()
    }

    fn leader(&self, key: &LeaderKey) -> Option<CachedLeader> {
        lock(&self.leaders).get(key).cloned()
    }

    fn set_leader(&self, key: &LeaderKey, leader: CachedLeader) {
        lock(&self.leaders).insert(key.clone(), leader);
    }

    fn forget_leader(&self, key: &LeaderKey) {
        lock(&self.leaders).remove(key);
    }

    async fn get_json(&self, url: &str) -> Result<Arc<Json>, ScalerError> {
        let endpoint = Endpoint::parse(url, false).map_err(|_| {
            ScalerError::InvalidConfig(format!(
                "nats-jetstream: {} is not a valid monitoring URL",
                mask_userinfo(url)
            ))
        })?;
        self.http.fetch_json(&endpoint).await
    }

    async fn client(&self, server: &NatsServer) -> Result<async_nats::Client, ScalerError> {
        let cell = lock(&self.connections).entry(server.key()).or_default().clone();
        // A failed connect leaves the cell empty: the next poll tries again.
        cell.get_or_try_init(|| connect(server, self.timeout))
            .await
            .cloned()
    }
}

impl fmt::Debug for NatsJetStreamClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamClients")
            .field("timeout", &self.timeout)
            .field("cached_leaders", &lock(&self.leaders).len())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// Every critical section is one map call, so a poisoned map is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// `error: source: source…`, skipping repeated messages.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

// ---------------------------------------------------------------------------------------------
// Cold activation: one /jsz watcher per monitoring endpoint and account
// ---------------------------------------------------------------------------------------------

/// How often a monitoring watcher reads `/jsz` while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

/// The longest pause between watcher rounds after failed rounds.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Counters of the monitoring activity watchers of a [`NatsJetStreamClients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatcherStats {
    /// Watchers alive (one per monitoring endpoint and account with a scaler holding it).
    pub watchers: usize,
    /// Triggers registered over all watchers.
    pub triggers: usize,
    /// Watchers whose task is running.
    pub running: usize,
    /// Rounds made so far.
    pub rounds: u64,
    /// `/jsz` requests made by the watchers so far.
    pub requests: u64,
}

/// The activity a `/jsz` document gives one consumer, exactly as [`Scaler::sample`] computes it
/// (`num_pending + num_ack_pending > activation`), or `None` when the document cannot tell: the
/// consumer is not there, the document is malformed, or (with `leader`) the node is not the
/// consumer's leader.
pub fn jsz_activity(
    doc: &Json,
    accounts: &[&str],
    stream: &str,
    consumer: &str,
    activation: f64,
    leader: Option<&str>,
) -> Option<bool> {
    let view = read_jsz(doc, accounts, stream, consumer).ok()?;
    let c = view.consumer?;
    if leader.is_some() && c.leader.as_deref() != leader {
        return None;
    }
    Some(is_active(c.lag.total() as f64, activation))
}

/// Key of a monitoring watcher: the endpoint (`scheme://host:port`) and the `acc=` value.
type WatcherKey = (String, String);

/// One registered trigger of a watcher.
struct Watched {
    accounts: Vec<String>,
    stream: String,
    consumer: String,
    activation: f64,
    activity: watch::Sender<bool>,
}

#[derive(Default)]
struct WatcherState {
    next_id: u64,
    /// Whether the watcher's task runs (set and cleared under this lock).
    running: bool,
    triggers: HashMap<u64, Watched>,
}

/// Reads one endpoint's `/jsz` (the account's streams and consumers) every [`WATCH_TICK`] for
/// all its registered triggers and flips their activity channels on change. In a cluster the
/// consumers' numbers come from their leaders (as cached by the scalers' own polls), one
/// request per leader node.
struct JszWatcher {
    monitoring: Monitoring,
    state: Mutex<WatcherState>,
}

/// What a round needs of one trigger (copied out of the lock).
struct RoundItem {
    id: u64,
    accounts: Vec<String>,
    stream: String,
    consumer: String,
    activation: f64,
}

impl JszWatcher {
    fn register(
        &self,
        accounts: Vec<String>,
        stream: &str,
        consumer: &str,
        activation: f64,
    ) -> (u64, watch::Receiver<bool>) {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = state.next_id;
        let (activity, receiver) = watch::channel(false);
        state.triggers.insert(
            id,
            Watched {
                accounts,
                stream: stream.to_string(),
                consumer: consumer.to_string(),
                activation,
                activity,
            },
        );
        (id, receiver)
    }

    fn unregister(&self, id: u64) {
        lock(&self.state).triggers.remove(&id);
    }

    /// Starts the task if it is not running, a trigger is registered and a runtime is at hand.
    fn ensure_running(self: &Arc<Self>, clients: &Arc<NatsJetStreamClients>) {
        if clients.watch_tick.is_zero() {
            return;
        }
        let mut state = lock(&self.state);
        if state.running || state.triggers.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.running = true;
        runtime.spawn(watch_loop(Arc::downgrade(self), Arc::downgrade(clients)));
    }

    /// Marks the task stopped when no trigger is left (under the lock, so that a registration
    /// racing with this starts a new task).
    fn finish_if_idle(&self) -> bool {
        let mut state = lock(&self.state);
        if state.triggers.is_empty() {
            state.running = false;
            return true;
        }
        false
    }

    /// One round. Returns false when the endpoint could not be read.
    /// The watcher itself is not held during the requests, so that dropping the last scaler
    /// frees it at once.
    async fn round(watcher: &Weak<Self>, clients: &NatsJetStreamClients) -> bool {
        let Some(w) = watcher.upgrade() else {
            return true;
        };
        clients.watch_rounds.fetch_add(1, Ordering::Relaxed);
        let items: Vec<RoundItem> = lock(&w.state)
            .triggers
            .iter()
            .map(|(id, w)| RoundItem {
                id: *id,
                accounts: w.accounts.clone(),
                stream: w.stream.clone(),
                consumer: w.consumer.clone(),
                activation: w.activation,
            })
            .collect();
        let m = &w.monitoring.clone();
        drop(w);
        let publish = |results: &[(u64, bool)]| {
            if let Some(w) = watcher.upgrade() {
                w.publish(results);
            }
        };
        let fetch = async |authority: &str| {
            clients.watch_requests.fetch_add(1, Ordering::Relaxed);
            clients.get_json(&m.jsz_url(authority)).await
        };
        let Ok(doc) = fetch(&m.authority).await else {
            return false;
        };
        let cluster_size = read_jsz(&doc, &[], "", "").map_or(0, |v| v.cluster_size);
        let mut results: Vec<(u64, bool)> = Vec::new();
        if cluster_size <= 1 {
            for it in &items {
                let accounts: Vec<&str> = it.accounts.iter().map(String::as_str).collect();
                if let Some(active) =
                    jsz_activity(&doc, &accounts, &it.stream, &it.consumer, it.activation, None)
                {
                    results.push((it.id, active));
                }
            }
        } else {
            // Clustered: only the leader's numbers are right; ask each cached leader node once.
            let mut by_node: HashMap<String, Vec<(&RoundItem, String)>> = HashMap::new();
            for it in &items {
                let key: LeaderKey = (
                    m.url(&m.authority, ""),
                    m.account.clone(),
                    it.stream.clone(),
                    it.consumer.clone(),
                );
                if let Some(leader) = clients.leader(&key) {
                    by_node
                        .entry(leader.authority)
                        .or_default()
                        .push((it, leader.name));
                }
            }
            let mut all_ok = true;
            for (authority, members) in by_node {
                let node_doc = if authority == m.authority {
                    doc.clone()
                } else {
                    match fetch(&authority).await {
                        Ok(d) => d,
                        Err(_) => {
                            all_ok = false;
                            continue;
                        }
                    }
                };
                for (it, name) in members {
                    let accounts: Vec<&str> = it.accounts.iter().map(String::as_str).collect();
                    if let Some(active) = jsz_activity(
                        &node_doc,
                        &accounts,
                        &it.stream,
                        &it.consumer,
                        it.activation,
                        Some(&name),
                    ) {
                        results.push((it.id, active));
                    }
                }
            }
            if !all_ok {
                publish(&results);
                return false;
            }
        }
        publish(&results);
        true
    }

    /// Flips the channels whose activity changed.
    fn publish(&self, results: &[(u64, bool)]) {
        let state = lock(&self.state);
        for (id, active) in results {
            if let Some(w) = state.triggers.get(id) {
                w.activity.send_if_modified(|current| {
                    let changed = *current != *active;
                    *current = *active;
                    changed
                });
            }
        }
    }
}

/// The task of one watcher: a round every tick ([`WATCH_TICK`] by default; backing off up to
/// [`WATCH_MAX_BACKOFF`] after failures) while triggers are registered; ends when none is left.
async fn watch_loop(watcher: Weak<JszWatcher>, clients: Weak<NatsJetStreamClients>) {
    let mut failures: u32 = 0;
    loop {
        let Some(w) = watcher.upgrade() else {
            return;
        };
        if w.finish_if_idle() {
            return;
        }
        let Some(c) = clients.upgrade() else {
            lock(&w.state).running = false;
            return;
        };
        drop(w);
        failures = if JszWatcher::round(&watcher, &c).await {
            0
        } else {
            failures.saturating_add(1)
        };
        let tick = c.watch_tick;
        drop(c);
        let pause = tick
            .saturating_mul(1 << failures.min(3))
            .min(tick.max(WATCH_MAX_BACKOFF));
        tokio::time::sleep(pause).await;
    }
}

/// A scaler's place in its watcher; unregisters when the scaler is dropped.
struct Registration {
    watcher: Arc<JszWatcher>,
    id: u64,
    /// The activity channel as of the scaler's last sample (marked seen when a sample starts,
    /// so that a flip during or after it still wakes the caller).
    seen: Mutex<watch::Receiver<bool>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watcher.unregister(self.id);
    }
}

/// Where one trigger reads its consumer.
#[derive(Debug, Clone)]
enum Source {
    Monitoring(Monitoring),
    JetStream(NatsServer),
}

/// One nats-jetstream trigger.
pub struct NatsJetStreamScaler {
    clients: Arc<NatsJetStreamClients>,
    /// Monitoring triggers: the registration with the endpoint's activity watcher.
    registration: Option<Registration>,
    source: Source,
    stream: String,
    consumer: String,
    target: f64,
    activation: f64,
}

impl NatsJetStreamScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::nats_jetstream`]) and
    /// its thresholds. `natsServerURL`, when set, selects the JetStream API; otherwise
    /// `natsServerMonitoringEndpoint` and `account`/`accountID` are used.
    pub fn new(
        clients: Arc<NatsJetStreamClients>,
        params: &ParsedParams,
        thresholds: Thresholds,
    ) -> Result<Self, ScalerError> {
        let missing = |name: &str| ScalerError::InvalidConfig(format!("nats-jetstream: {name} has no value"));
        let stream = params.str("stream").ok_or_else(|| missing("stream"))?;
        let consumer = params.str("consumer").ok_or_else(|| missing("consumer"))?;
        let source = if let Some(url) = params.str("natsServerURL") {
            Source::JetStream(NatsServer::parse(url)?)
        } else {
            let authority = params
                .str("natsServerMonitoringEndpoint")
                .ok_or_else(|| missing("natsServerMonitoringEndpoint or natsServerURL"))?;
            let account = params
                .str("accountID")
                .or(params.str("account"))
                .ok_or_else(|| missing("account or accountID"))?;
            let accounts = ["account", "accountID"]
                .iter()
                .filter_map(|n| params.str(n))
                .map(str::to_string)
                .collect();
            let monitoring = Monitoring {
                scheme: if params.bool("useHttps").unwrap_or(false) {
                    "https"
                } else {
                    "http"
                },
                authority: authority.to_string(),
                account: account.to_string(),
                accounts,
            };
            // Fail now, not at every poll, if the endpoint cannot make a URL.
            let url = monitoring.jsz_url(&monitoring.authority);
            Endpoint::parse(&url, false).map_err(|_| {
                ScalerError::InvalidConfig(format!(
                    "nats-jetstream: natsServerMonitoringEndpoint {:?} does not make a valid URL",
                    mask_userinfo(authority)
                ))
            })?;
            Source::Monitoring(monitoring)
        };
        // The JetStream API path stays poll-only: a batched read there (CONSUMER.LIST) is per
        // stream, not per server.
        let registration = match &source {
            Source::Monitoring(m) => {
                let watcher = clients.watcher(m);
                let (id, seen) =
                    watcher.register(m.accounts.clone(), stream, consumer, thresholds.activation);
                watcher.ensure_running(&clients);
                Some(Registration {
                    watcher,
                    id,
                    seen: Mutex::new(seen),
                })
            }
            Source::JetStream(_) => None,
        };
        Ok(Self {
            clients,
            registration,
            source,
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            target: thresholds.target,
            activation: thresholds.activation,
        })
    }

    /// Reads the consumer's lag once (both paths).
    pub async fn lag(&self) -> Result<ConsumerLag, ScalerError> {
        match &self.source {
            Source::Monitoring(m) => self.lag_from_monitoring(m).await,
            Source::JetStream(server) => self.lag_from_jetstream(server).await,
        }
    }

    fn accounts(m: &Monitoring) -> Vec<&str> {
        m.accounts.iter().map(String::as_str).collect()
    }

    fn not_found(&self, m: &Monitoring, url: &str) -> ScalerError {
        ScalerError::bad_response(
            url,
            format!(
                "no consumer {:?} of stream {:?} in account {:?}",
                self.consumer, self.stream, m.account
            ),
        )
    }

    async fn lag_from_monitoring(&self, m: &Monitoring) -> Result<ConsumerLag, ScalerError> {
        let key: LeaderKey = (
            format!("{}://{}", m.scheme, m.authority),
            m.account.clone(),
            self.stream.clone(),
            self.consumer.clone(),
        );
        let accounts = Self::accounts(m);
        // 1. The cached leader, if it still is the leader.
        if let Some(cached) = self.clients.leader(&key) {
            let url = m.jsz_url(&cached.authority);
            if let Ok(doc) = self.clients.get_json(&url).await
                && let Ok(view) = read_jsz(&doc, &accounts, &self.stream, &self.consumer)
                && let Some(c) = view.consumer
                && c.leader.as_deref() == Some(cached.name.as_str())
            {
                return Ok(c.lag);
            }
            // Gone, moved or unreachable: find the leader again.
            self.clients.forget_leader(&key);
        }
        // 2. The configured endpoint.
        let url = m.jsz_url(&m.authority);
        let doc = self.clients.get_json(&url).await?;
        let view = read_jsz(&doc, &accounts, &self.stream, &self.consumer)
            .map_err(|e| ScalerError::bad_response(&url, e))?;
        if view.cluster_size <= 1 {
            return view
                .consumer
                .map(|c| c.lag)
                .ok_or_else(|| self.not_found(m, &url));
        }
        // 3. Clustered: find the consumer's leader.
        let leader = self.discover_leader(m).await?;
        let lag = leader.1;
        self.clients.set_leader(&key, leader.0);
        Ok(lag)
    }

    async fn discover_leader(&self, m: &Monitoring) -> Result<(CachedLeader, ConsumerLag), ScalerError> {
        let varz_url = m.url(&m.authority, "/varz");
        let doc = self.clients.get_json(&varz_url).await?;
        let varz = Varz::deserialize(&*doc)
            .map_err(|e| ScalerError::bad_response(&varz_url, format!("not a /varz answer: {e}")))?;
        let candidates = m.candidates(&varz);
        let accounts = Self::accounts(m);
        let mut notes = Vec::new();
        for candidate in &candidates {
            let name = match &candidate.name {
                Some(name) => name.clone(),
                None => {
                    let url = m.url(&candidate.authority, "/varz");
                    let named = match self.clients.get_json(&url).await {
                        Ok(doc) => Varz::deserialize(&*doc)
                            .map(|v| v.server_name)
                            .map_err(|e| format!("{}: not a /varz answer: {e}", mask_userinfo(&url))),
                        Err(e) => Err(e.to_string()),
                    };
                    match named {
                        Ok(name) if !name.is_empty() => name,
                        Ok(_) => {
                            notes.push(format!("{}: no server_name", mask_userinfo(&url)));
                            continue;
                        }
                        Err(note) => {
                            notes.push(note);
                            continue;
                        }
                    }
                }
            };
            let url = m.jsz_url(&candidate.authority);
            let view = match self.clients.get_json(&url).await {
                Ok(doc) => read_jsz(&doc, &accounts, &self.stream, &self.consumer)
                    .map_err(|e| format!("{}: {e}", mask_userinfo(&url))),
                Err(e) => Err(e.to_string()),
            };
            match view {
                Ok(JszView {
                    consumer: Some(c), ..
                }) if c.leader.as_deref() == Some(name.as_str()) => {
                    let leader = CachedLeader {
                        authority: candidate.authority.clone(),
                        name,
                    };
                    return Ok((leader, c.lag));
                }
                Ok(_) => {}
                Err(note) => notes.push(note),
            }
        }
        let mut message = format!(
            "leader node not found for consumer {:?} of stream {:?} among {} node(s)",
            self.consumer,
            self.stream,
            candidates.len()
        );
        if !notes.is_empty() {
            message.push_str(&format!(" ({})", notes.join("; ")));
        }
        Err(ScalerError::bad_response(&varz_url, message))
    }

    async fn lag_from_jetstream(&self, server: &NatsServer) -> Result<ConsumerLag, ScalerError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let timeout = self.clients.timeout;
        let client = self.clients.client(server).await?;
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(timeout);
        let stream = context.get_stream_no_info(&self.stream).await.map_err(|e| {
            ScalerError::InvalidConfig(format!("nats-jetstream: stream {:?}: {e}", self.stream))
        })?;
        let asked = stream.consumer_info(&self.consumer);
        let info = match tokio::time::timeout(timeout.saturating_mul(2), asked).await {
            Err(_) => return Err(ScalerError::timeout(&server.url, timeout.saturating_mul(2))),
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                let what = format!("consumer {:?} of stream {:?}", self.consumer, self.stream);
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

impl fmt::Debug for NatsJetStreamScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamScaler")
            .field("source", &self.source)
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for NatsJetStreamScaler {
    fn trigger_type(&self) -> &'static str {
        "nats-jetstream"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        if let Some(r) = &self.registration {
            r.watcher.ensure_running(&self.clients);
            lock(&r.seen).borrow_and_update();
        }
        let lag = self.lag().await?;
        Ok(TriggerSample::with_activation(
            lag.total() as f64,
            self.activation,
        ))
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        let r = self.registration.as_ref()?;
        r.watcher.ensure_running(&self.clients);
        Some(lock(&r.seen).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A `/jsz` answer as nats-server 2.9 gives it, trimmed to a realistic subset.
    fn jsz_doc(cluster_size: Option<u64>, leader: Option<&str>, pending: u64, ack_pending: u64) -> Json {
        let mut consumer = json!({
            "stream_name": "ORDERS",
            "name": "worker",
            "created": "2024-01-01T00:00:00Z",
            "config": {"durable_name": "worker", "ack_policy": "explicit", "filter_subject": "orders.>"},
            "delivered": {"consumer_seq": 5, "stream_seq": 5},
            "ack_floor": {"consumer_seq": 3, "stream_seq": 3},
            "num_ack_pending": ack_pending,
            "num_redelivered": 0,
            "num_waiting": 0,
            "num_pending": pending,
        });
        if let Some(leader) = leader {
            consumer["cluster"] = json!({"name": "c1", "leader": leader, "replicas": []});
        }
        let mut doc = json!({
            "server_id": "NABC",
            "now": "2024-01-01T00:00:00Z",
            "config": {"max_memory": 1, "store_dir": "/js"},
            "memory": 0, "storage": 0, "streams": 2, "consumers": 2,
            "account_details": [
                {"name": "other", "id": "other", "stream_detail": null},
                {
                    "name": "$G",
                    "id": "$G",
                    "stream_detail": [
                        {"name": "EVENTS", "state": {"messages": 1}, "consumer_detail": [
                            {"name": "worker", "num_pending": 999, "num_ack_pending": 999}
                        ]},
                        {
                            "name": "ORDERS",
                            "config": {"name": "ORDERS", "subjects": ["orders.>"]},
                            "state": {"messages": 20, "last_seq": 20},
                            "consumer_detail": [consumer],
                        },
                    ],
                },
            ],
        });
        if let Some(size) = cluster_size {
            doc["meta_cluster"] = json!({"name": "c1", "leader": "nats-0", "cluster_size": size});
        }
        doc
    }

    #[test]
    fn jsz_lag_is_pending_plus_ack_pending() {
        let doc = jsz_doc(None, None, 15, 2);
        let view = read_jsz(&doc, &["$G"], "ORDERS", "worker").unwrap();
        assert_eq!(view.cluster_size, 0);
        let consumer = view.consumer.unwrap();
        assert_eq!(
            consumer.lag,
            ConsumerLag {
                num_pending: 15,
                num_ack_pending: 2
            }
        );
        assert_eq!(consumer.lag.total(), 17);
        assert_eq!(consumer.leader, None);

        let view = read_jsz(
            &jsz_doc(Some(3), Some("nats-1"), 4, 0),
            &["$G"],
            "ORDERS",
            "worker",
        )
        .unwrap();
        assert_eq!(view.cluster_size, 3);
        assert_eq!(view.consumer.unwrap().leader.as_deref(), Some("nats-1"));

        let saturated = ConsumerLag {
            num_pending: u64::MAX,
            num_ack_pending: 1,
        };
        assert_eq!(saturated.total(), u64::MAX);
    }

    #[test]
    fn watcher_activity_matches_sample_semantics() {
        // Lag 17: active above 16, not at 17 (strictly greater, as sample()).
        let doc = jsz_doc(None, None, 15, 2);
        assert_eq!(
            jsz_activity(&doc, &["$G"], "ORDERS", "worker", 16.0, None),
            Some(true)
        );
        assert_eq!(
            jsz_activity(&doc, &["$G"], "ORDERS", "worker", 17.0, None),
            Some(false)
        );
        let empty = jsz_doc(None, None, 0, 0);
        assert_eq!(
            jsz_activity(&empty, &["$G"], "ORDERS", "worker", 0.0, None),
            Some(false)
        );
        // Unknown: no consumer, malformed, or not the expected leader's view. Never "inactive".
        assert_eq!(jsz_activity(&doc, &["$G"], "ORDERS", "other", 0.0, None), None);
        assert_eq!(
            jsz_activity(&json!([1]), &["$G"], "ORDERS", "worker", 0.0, None),
            None
        );
        let clustered = jsz_doc(Some(3), Some("nats-1"), 15, 2);
        assert_eq!(
            jsz_activity(&clustered, &["$G"], "ORDERS", "worker", 0.0, Some("nats-1")),
            Some(true)
        );
        assert_eq!(
            jsz_activity(&clustered, &["$G"], "ORDERS", "worker", 0.0, Some("nats-2")),
            None
        );
    }

    #[test]
    fn jsz_lookup_matches_account_stream_and_consumer() {
        let doc = jsz_doc(None, None, 15, 2);
        // The account is matched by name or id; a stream by its name or its config's name.
        assert!(
            read_jsz(&doc, &["nope", "$G"], "ORDERS", "worker")
                .unwrap()
                .consumer
                .is_some()
        );
        assert!(
            read_jsz(&doc, &["other"], "ORDERS", "worker")
                .unwrap()
                .consumer
                .is_none()
        );
        assert!(
            read_jsz(&doc, &["$G"], "ORDERS", "other")
                .unwrap()
                .consumer
                .is_none()
        );
        assert!(
            read_jsz(&doc, &["$G"], "MISSING", "worker")
                .unwrap()
                .consumer
                .is_none()
        );
        assert_eq!(
            read_jsz(&doc, &["$G"], "EVENTS", "worker")
                .unwrap()
                .consumer
                .unwrap()
                .lag
                .total(),
            1998
        );
        let by_config = json!({"account_details": [{"name": "A", "stream_detail": [
            {"config": {"name": "S"}, "consumer_detail": [{"name": "c", "num_pending": 1, "num_ack_pending": 1}]}
        ]}]});
        assert_eq!(
            read_jsz(&by_config, &["A"], "S", "c")
                .unwrap()
                .consumer
                .unwrap()
                .lag
                .total(),
            2
        );
        // Empty and null parts read as empty, not as errors.
        for empty in [
            json!({}),
            json!({"account_details": null}),
            json!({"meta_cluster": null}),
        ] {
            let view = read_jsz(&empty, &["$G"], "S", "c").unwrap();
            assert_eq!((view.cluster_size, view.consumer), (0, None));
        }
    }

    #[test]
    fn malformed_jsz_is_an_error() {
        let missing = json!({"account_details": [{"name": "A", "stream_detail": [
            {"name": "S", "consumer_detail": [{"name": "c", "num_ack_pending": 1}]}
        ]}]});
        let e = read_jsz(&missing, &["A"], "S", "c").unwrap_err();
        assert!(e.contains("no num_pending"), "{e}");
        for bad in [
            json!([1, 2]),
            json!({"account_details": {"x": 1}}),
            json!({"account_details": [{"name": "A", "stream_detail": [
                {"name": "S", "consumer_detail": [{"name": "c", "num_pending": -1, "num_ack_pending": 0}]}
            ]}]}),
            json!({"account_details": [{"name": "A", "stream_detail": [
                {"name": "S", "consumer_detail": [{"name": "c", "num_pending": "7", "num_ack_pending": 0}]}
            ]}]}),
        ] {
            let e = read_jsz(&bad, &["A"], "S", "c").unwrap_err();
            assert!(e.starts_with("not a /jsz answer"), "{e}");
        }
    }

    #[test]
    fn addresses_and_node_candidates() {
        assert_eq!(split_host_port("nats:8222"), ("nats", Some("8222")));
        assert_eq!(split_host_port("nats"), ("nats", None));
        assert_eq!(split_host_port("[::1]:8222"), ("[::1]", Some("8222")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(node_host("10.0.0.5:4222"), "10.0.0.5");
        assert_eq!(node_host("nats://u:p@nats-1.nats.svc:4222"), "nats-1.nats.svc");
        assert_eq!(node_host("[fd00::1]:4222"), "[fd00::1]");

        let m = Monitoring {
            scheme: "http",
            authority: "nats.ns.svc:8222".into(),
            account: "$G".into(),
            accounts: vec!["$G".into()],
        };
        assert_eq!(
            m.jsz_url("nats.ns.svc:8222"),
            "http://nats.ns.svc:8222/jsz?acc=%24G&config=true&consumers=true"
        );
        let advertised = Varz {
            server_name: "nats-0".into(),
            connect_urls: vec![
                "10.0.0.1:4222".into(),
                "10.0.0.2:4222".into(),
                "10.0.0.1:4222".into(),
            ],
            cluster: None,
        };
        assert_eq!(
            m.candidates(&advertised),
            [
                Candidate {
                    name: None,
                    authority: "10.0.0.1:8222".into()
                },
                Candidate {
                    name: None,
                    authority: "10.0.0.2:8222".into()
                },
            ]
        );
        // Not advertised: the headless-service pattern, `<node>.<endpoint>`.
        let hidden = Varz {
            server_name: "nats-0".into(),
            connect_urls: vec![],
            cluster: Some(VarzCluster {
                urls: vec!["nats-1.nats.ns.svc:6222".into(), "nats-2.nats.ns.svc:6222".into()],
            }),
        };
        let names: Vec<(Option<String>, String)> = m
            .candidates(&hidden)
            .into_iter()
            .map(|c| (c.name, c.authority))
            .collect();
        assert_eq!(
            names,
            [
                (Some("nats-1".into()), "nats-1.nats.ns.svc:8222".into()),
                (Some("nats-2".into()), "nats-2.nats.ns.svc:8222".into()),
                (Some("nats-0".into()), "nats-0.nats.ns.svc:8222".into()),
            ]
        );
    }

    #[test]
    fn client_urls_lose_their_credentials() {
        let s = NatsServer::parse("nats://us%40er:p%3Ass@nats:4222").unwrap();
        assert_eq!(s.url, "nats://nats:4222");
        assert!(matches!(&s.auth, NatsAuth::UserPassword(u, p) if u == "us@er" && p == "p:ss"));
        let t = NatsServer::parse("tls://s3cr3t-token@nats:4222").unwrap();
        assert!(matches!(&t.auth, NatsAuth::Token(tok) if tok == "s3cr3t-token"));
        let debug = format!("{s:?} {t:?}");
        assert!(!debug.contains("p:ss") && !debug.contains("s3cr3t"), "{debug}");
        assert_ne!(
            s.key(),
            NatsServer::parse("nats://us%40er:other@nats:4222").unwrap().key()
        );
        assert_eq!(
            s.key(),
            NatsServer::parse("nats://us%40er:p%3Ass@nats:4222/")
                .unwrap()
                .key()
        );
        assert_eq!(NatsServer::parse("nats://nats:4222").unwrap().key().1, None);
        for bad in ["http://nats:4222", "u:secret@nats:4222", "nats://"] {
            let e = NatsServer::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn scaler_debug_hides_credentials() {
        let http = Arc::new(MetricsApiClient::new(Duration::from_secs(1)).unwrap());
        let clients = Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(1)));
        let metas: [&[(&str, &str)]; 2] = [
            &[
                ("natsServerMonitoringEndpoint", "admin:hunter2@nats:8222"),
                ("account", "$G"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
            &[
                ("natsServerURL", "nats://admin:hunter2@nats:4222"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
        ];
        for meta in metas {
            let params = parse_meta(&crate::nats_jetstream::DECL, meta).unwrap();
            let thresholds = (crate::nats_jetstream::DECL.thresholds)(&params);
            let scaler = NatsJetStreamScaler::new(clients.clone(), &params, thresholds).unwrap();
            let debug = format!("{scaler:?} {clients:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
        }
    }

    /// What the fake cluster serves.
    #[derive(Debug)]
    struct ClusterState {
        /// Index of the consumer's leader, if there is one.
        leader: Option<usize>,
        /// Which nodes hold a replica of the consumer (and so report it).
        replicas: [bool; 3],
        /// Nodes that answer 503.
        down: [bool; 3],
        clustered: bool,
    }

    /// Three fake nats-server monitoring ports on 127.0.0.1, .2 and .3, all on the same port,
    /// serving canned /varz and /jsz. Followers report stale numbers; the leader 15 + 2.
    struct FakeCluster {
        port: u16,
        state: Arc<Mutex<ClusterState>>,
        hits: Arc<Mutex<Vec<(usize, String)>>>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl FakeCluster {
        async fn start(clustered: bool) -> Self {
            let state = Arc::new(Mutex::new(ClusterState {
                leader: Some(1),
                replicas: [true; 3],
                down: [false; 3],
                clustered,
            }));
            let hits = Arc::new(Mutex::new(Vec::new()));
            for _ in 0..50 {
                let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = first.local_addr().unwrap().port();
                let (Ok(second), Ok(third)) = (
                    TcpListener::bind(("127.0.0.2", port)).await,
                    TcpListener::bind(("127.0.0.3", port)).await,
                ) else {
                    continue;
                };
                let tasks = [first, second, third]
                    .into_iter()
                    .enumerate()
                    .map(|(node, listener)| {
                        let (state, hits) = (state.clone(), hits.clone());
                        tokio::spawn(async move {
                            while let Ok((sock, _)) = listener.accept().await {
                                tokio::spawn(serve(node, port, sock, state.clone(), hits.clone()));
                            }
                        })
                    })
                    .collect();
                return Self {
                    port,
                    state,
                    hits,
                    tasks,
                };
            }
            panic!("could not bind one port on 127.0.0.1, .2 and .3");
        }

        fn set(&self, f: impl FnOnce(&mut ClusterState)) {
            f(&mut self.state.lock().unwrap());
        }

        fn take_hits(&self) -> Vec<(usize, String)> {
            std::mem::take(&mut *self.hits.lock().unwrap())
        }
    }

    impl Drop for FakeCluster {
        fn drop(&mut self) {
            for t in &self.tasks {
                t.abort();
            }
        }
    }

    async fn serve(
        node: usize,
        port: u16,
        mut sock: TcpStream,
        state: Arc<Mutex<ClusterState>>,
        hits: Arc<Mutex<Vec<(usize, String)>>>,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("").to_string();
        hits.lock().unwrap().push((node, path.clone()));
        let (status, body) = {
            let s = state.lock().unwrap();
            let name = |i: usize| format!("nats-{i}");
            if s.down[node] {
                ("503 Service Unavailable", "{}".to_string())
            } else if path == "/varz" {
                let urls: Vec<String> = (1..=3).map(|i| format!("127.0.0.{i}:4222")).collect();
                let body = json!({
                    "server_id": format!("N{node}"),
                    "server_name": name(node),
                    "port": 4222,
                    "http_port": port,
                    "connect_urls": urls,
                    "cluster": {"name": "c1", "addr": "0.0.0.0", "cluster_port": 6222, "urls": []},
                });
                ("200 OK", body.to_string())
            } else if path == "/jsz" {
                assert_eq!(
                    target, "/jsz?acc=%24G&config=true&consumers=true",
                    "KEDA's query, account encoded"
                );
                let mut doc = if s.replicas[node] {
                    let leader = s.leader.map(name);
                    let (pending, ack) = if s.leader == Some(node) {
                        (15, 2)
                    } else {
                        (100 + node as u64, 0)
                    };
                    jsz_doc(None, leader.as_deref().filter(|_| s.clustered), pending, ack)
                } else {
                    json!({"account_details": [{"name": "$G", "id": "$G", "stream_detail": []}]})
                };
                if s.clustered {
                    doc["meta_cluster"] = json!({"name": "c1", "leader": "nats-0", "cluster_size": 3});
                }
                ("200 OK", doc.to_string())
            } else {
                ("404 Not Found", "{}".to_string())
            }
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(reply.as_bytes()).await;
        let _ = sock.shutdown().await;
    }

    /// A scaler on the fake cluster, without the activity watcher (its requests would mix with
    /// the polls' in the hit lists).
    fn scaler(port: u16) -> NatsJetStreamScaler {
        scaler_with(port, Duration::ZERO)
    }

    fn scaler_with(port: u16, watch_tick: Duration) -> NatsJetStreamScaler {
        let http = Arc::new(MetricsApiClient::new(Duration::from_secs(2)).unwrap());
        let clients =
            Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(2)).with_watch_tick(watch_tick));
        let endpoint = format!("127.0.0.1:{port}");
        let params = parse_meta(
            &crate::nats_jetstream::DECL,
            &[
                ("natsServerMonitoringEndpoint", endpoint.as_str()),
                ("account", "$G"),
                ("stream", "ORDERS"),
                ("consumer", "worker"),
                ("lagThreshold", "5"),
                ("activationLagThreshold", "16"),
            ],
        )
        .unwrap();
        let thresholds = (crate::nats_jetstream::DECL.thresholds)(&params);
        NatsJetStreamScaler::new(clients, &params, thresholds).unwrap()
    }

    fn cached(s: &NatsJetStreamScaler) -> Option<String> {
        let leaders = lock(&s.clients.leaders);
        assert!(leaders.len() <= 1);
        leaders
            .values()
            .next()
            .map(|l| format!("{} {}", l.name, l.authority))
    }

    fn hit(node: usize, path: &str) -> (usize, String) {
        (node, path.to_string())
    }

    #[tokio::test]
    async fn single_server_reads_its_own_jsz() {
        let cluster = FakeCluster::start(false).await;
        let s = scaler(cluster.port);
        for _ in 0..2 {
            let sample = s.sample().await.unwrap();
            assert_eq!(
                sample.value, 100.0,
                "node 0's numbers: not clustered, so no leader hunt"
            );
            assert!(sample.active);
        }
        assert_eq!(cluster.take_hits(), [hit(0, "/jsz"), hit(0, "/jsz")]);
        assert_eq!(cached(&s), None);
        cluster.set(|c| c.replicas = [false; 3]);
        let e = s.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("no consumer \"worker\" of stream \"ORDERS\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn leader_is_found_cached_and_found_again_when_it_moves() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        let port = cluster.port;

        // Discovery: the endpoint's /jsz says clustered, its /varz lists the nodes, each node's
        // /varz gives its name, and node 1's /jsz names nats-1 as the leader.
        let sample = s.sample().await.unwrap();
        assert_eq!(sample.value, 17.0);
        assert!(sample.active, "17 > 16");
        assert_eq!(
            cluster.take_hits(),
            [
                hit(0, "/jsz"),
                hit(0, "/varz"),
                hit(0, "/varz"),
                hit(0, "/jsz"),
                hit(1, "/varz"),
                hit(1, "/jsz"),
            ]
        );
        assert_eq!(cached(&s), Some(format!("nats-1 127.0.0.2:{port}")));

        // Cached: one request, to the leader only.
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cluster.take_hits(), [hit(1, "/jsz")]);

        // Leadership moves to node 2: node 1 now names nats-2, so the leader is found again.
        cluster.set(|c| c.leader = Some(2));
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        let hits = cluster.take_hits();
        assert_eq!(hits.first(), Some(&hit(1, "/jsz")));
        assert_eq!(hits.last(), Some(&hit(2, "/jsz")));
        assert_eq!(cached(&s), Some(format!("nats-2 127.0.0.3:{port}")));

        // The cached node stops reporting the consumer (replica moved away), node 0 leads.
        cluster.set(|c| {
            c.replicas = [true, true, false];
            c.leader = Some(0);
        });
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-0 127.0.0.1:{port}")));
    }

    #[tokio::test]
    async fn an_unreachable_leader_is_skipped_and_no_leader_is_an_error() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        let port = cluster.port;
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-1 127.0.0.2:{port}")));

        // The cached leader dies; node 2 leads. Node 1 is skipped (noted), node 2 found.
        cluster.set(|c| {
            c.down[1] = true;
            c.leader = Some(2);
        });
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-2 127.0.0.3:{port}")));

        // No leader at all (e.g. mid-election): an error, never a zero, and nothing cached.
        cluster.set(|c| {
            c.down[1] = false;
            c.leader = None;
        });
        let e = s.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(
            e.to_string().contains(
                "leader node not found for consumer \"worker\" of stream \"ORDERS\" among 3 node(s)"
            ),
            "{e}"
        );
        assert_eq!(cached(&s), None);

        // The leader is back: found again.
        cluster.set(|c| c.leader = Some(0));
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-0 127.0.0.1:{port}")));

        // A node that is down is named in the error when no leader is found.
        cluster.set(|c| {
            c.leader = None;
            c.down[2] = true;
        });
        let e = s.sample().await.unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
    }

    #[tokio::test]
    async fn watcher_reads_each_cached_leader_once_per_round() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler_with(cluster.port, WATCH_TICK);
        let mut changes = s.activity_changes().unwrap();
        // The poll finds and caches the leader (node 1: 15 + 2 > 16).
        assert!(s.sample().await.unwrap().active);
        cluster.take_hits();
        // The watcher's rounds: the endpoint's /jsz (cluster size) and the leader's.
        tokio::time::timeout(Duration::from_secs(3), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(*changes.borrow_and_update());
        let hits = cluster.take_hits();
        assert!(hits.iter().all(|h| h.1 == "/jsz"), "{hits:?}");
        assert!(hits.contains(&hit(1, "/jsz")), "{hits:?}");
        // No leader anywhere (election): nothing is flipped to inactive.
        cluster.set(|c| c.leader = None);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!changes.has_changed().unwrap() && *changes.borrow());
        assert_eq!(s.clients.watcher_stats().running, 1);
        let clients = s.clients.clone();
        drop(s);
        assert_eq!(clients.watcher_stats().watchers, 0);
    }

    #[tokio::test]
    async fn activation_boundary_and_unreachable_endpoint() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        // The scaler's activation threshold is 16: 17 is active; at 16 it would not be.
        assert!(s.sample().await.unwrap().active);
        assert!(!TriggerSample::with_activation(16.0, s.activation).active);
        assert_eq!(s.metric_target().target_value, 5.0);
        drop(cluster);

        // Nothing listens: an Unreachable error (the cached leader fails, then the endpoint).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = scaler(port).sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    }
}
