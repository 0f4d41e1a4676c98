//! The HTTP side of the prometheus trigger: one [`PrometheusClients`] per
//! [`ScalerFactory`](crate::ScalerFactory) keeps one pooled HTTP/1.1 client ([`Connection`]) per
//! server origin + credentials + TLS settings, while a trigger uses it (a [`WeakPool`]: rotated
//! credentials get a new client and the old one goes with its last trigger).
//!
//! A request is one GET of the query URL with the trigger's headers, bounded four ways: the
//! whole exchange by the trigger's `timeout` (or the operator's HTTP timeout), the body by
//! [`MAX_BODY_BYTES`], the bytes in flight by the process-wide [`ByteBudget`], and the requests
//! in flight per namespace by [`PER_NAMESPACE_IN_FLIGHT`] (the servers are the tenants' own: one
//! tenant's slow server cannot hold more than its share). Errors name the endpoint as shown
//! (credentials masked, no query string).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};

use super::config::PrometheusConfig;
use crate::ScalerError;
use crate::common::budget::ByteBudget;
use crate::common::http::{BoundedBody, HttpsClient, pooled_client, read_body_bounded, send};
use crate::common::namespace_slots::NamespaceLimits;
pub use crate::common::namespace_slots::NamespaceSlots;
use crate::common::pool::WeakPool;
use crate::common::tls::TlsSettings;

/// The largest answer read (1 MiB). A single-series answer is well under 1 KiB even with many
/// labels; an answer this large holds thousands of series, which is an error anyway (the query
/// must return one), so the cap only decides how that error reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many prometheus queries one namespace may have in flight at once (as metrics-api); a
/// query that finds them all taken waits up to half its timeout, then fails with
/// [`ScalerError::Overloaded`].
pub const PER_NAMESPACE_IN_FLIGHT: usize = 8;

/// The requests the namespace limit counts, as its error names them.
const WHAT: &str = "prometheus queries";

/// Pool key: the server's origin, its TLS settings (trust and client certificate) and a SHA-256
/// digest of the credential headers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConnectionKey {
    origin: String,
    tls: TlsSettings,
    credentials: [u8; 32],
}

/// The pooled clients of every prometheus trigger of a factory.
pub struct PrometheusClients {
    pool: WeakPool<ConnectionKey, Connection>,
    timeout: Duration,
    budget: ByteBudget,
    /// Each namespace's query slots, while one of its triggers lives.
    namespaces: NamespaceLimits,
}

impl PrometheusClients {
    /// An empty pool whose requests default to `timeout` (the factory's HTTP timeout). Needs no
    /// async runtime.
    pub fn new(timeout: Duration) -> Self {
        Self {
            pool: WeakPool::new(),
            timeout,
            budget: ByteBudget::global().clone(),
            namespaces: NamespaceLimits::new(WHAT, PER_NAMESPACE_IN_FLIGHT),
        }
    }

    /// Uses `budget` instead of the process-wide one (for tests).
    pub fn with_budget(mut self, budget: ByteBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Allows `per_namespace` queries in flight per namespace (for tests).
    pub fn with_per_namespace(mut self, per_namespace: usize) -> Self {
        self.namespaces = NamespaceLimits::new(WHAT, per_namespace);
        self
    }

    /// The query slots of `namespace`, shared by its triggers while one of them lives.
    pub fn namespace_slots(&self, namespace: &str) -> NamespaceSlots {
        self.namespaces.slots(namespace)
    }

    /// The default timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many clients a trigger uses now.
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    /// Whether no trigger uses a client.
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// The client for `config`'s server, credentials and TLS settings, shared with every trigger
    /// that has the same. A CA or client certificate that cannot be used is an
    /// [`ScalerError::InvalidConfig`] that never quotes key material.
    pub fn connection(&self, config: &PrometheusConfig) -> Result<Arc<Connection>, ScalerError> {
        let tls = config.auth.tls.clone();
        let client_config = tls
            .client_config()
            .map_err(|e| ScalerError::InvalidConfig(format!("prometheus TLS: {e}")))?;
        let key = ConnectionKey {
            origin: config.server.origin(),
            credentials: credentials_digest(config),
            tls,
        };
        let roots_problem = key.tls.roots_problem().filter(|_| config.server.is_https());
        let budget = self.budget.clone();
        Ok(self.pool.get_or_insert_with(key, move || Connection {
            http: pooled_client(client_config, None),
            roots_problem,
            budget,
        }))
    }
}

impl fmt::Debug for PrometheusClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusClients")
            .field("clients", &self.pool.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// SHA-256 over the credential headers, length-prefixed.
fn credentials_digest(config: &PrometheusConfig) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    let auth = &config.auth;
    part(
        auth.authorization
            .as_ref()
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
    );
    let (name, value) = match &auth.custom {
        Some((name, value)) => (name.as_str().as_bytes(), value.as_bytes()),
        None => (&b""[..], &b""[..]),
    };
    part(name);
    part(value);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A pooled HTTP client for one server, credentials and TLS settings.
pub struct Connection {
    http: HttpsClient,
    /// Why the system's roots are missing, for errors of verified HTTPS requests.
    roots_problem: Option<&'static str>,
    budget: ByteBudget,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// An answer: its status and its body, read within [`MAX_BODY_BYTES`] and held against the
/// byte budget while kept.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: BoundedBody,
}

impl Connection {
    /// Sends `request` and reads the answer within `timeout` (the whole exchange). No response is
    /// [`ScalerError::Unreachable`], no whole answer in time [`ScalerError::Timeout`], a body
    /// over the cap [`ScalerError::BadResponse`], a full budget [`ScalerError::Overloaded`].
    pub async fn get(
        &self,
        request: Request<Empty<Bytes>>,
        shown: &str,
        timeout: Duration,
    ) -> Result<Answer, ScalerError> {
        let exchange = async {
            let response = send(&self.http, request, shown, self.roots_problem).await?;
            let status = response.status();
            let body = read_body_bounded(response.into_body(), MAX_BODY_BYTES, &self.budget, shown).await?;
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ScalerError::timeout(shown, timeout)),
        }
    }
}
