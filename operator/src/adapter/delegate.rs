//! The executor of the chain to a delegate metrics adapter (`--metrics-adapter-delegate`): the
//! adapter library decides which requests are not ebb's and builds the caller's front-proxy
//! headers; this module only finds the delegate, trusts it, authenticates to it and carries the
//! GET, within a time and size bound.
//!
//! - **Where**: a Service (`namespace/name:port`), resolved as the API server's aggregator does
//!   it: the Service's cluster IP at that port, its certificate verified for
//!   `<name>.<namespace>.svc` against the CA bundle the APIService had (`--metrics-adapter-
//!   delegate-ca`), or not verified when the APIService said `insecureSkipTLSVerify`. The Service
//!   is read again every 30 s (the operator needs `get` on that one Service).
//! - **As whom**: either the caller, through front-proxy headers over a client certificate the
//!   delegate trusts as its front proxy (signed by the cluster's requestheader CA, with a CN in
//!   `requestheader-allowed-names`), or ebb's own ServiceAccount token (the delegate then sees,
//!   and authorizes, ebb's ServiceAccount; ebb authorized the caller first).
//! - Files (CA, certificate, key, token) are read again every 60 s and on every failure, so
//!   rotated Secrets take effect without a restart; nothing read is ever logged.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ebb_metrics_adapter::{Delegate, DelegateAnswer, DelegateError, DelegateRequest};
use ebb_scalers::common::http::{HttpsClient, USER_AGENT, pooled_client, send};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::adapter::certs::verify::LeaderTrust;

/// How long one forwarded request may take (connect, answer and body).
const DELEGATE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from the delegate.
pub const MAX_DELEGATE_ANSWER: usize = 4 * 1024 * 1024;
/// How long the Service's address is reused.
const SERVICE_CACHE: Duration = Duration::from_secs(30);
/// How often the trust and credential files are read again.
const FILES_REFRESH: Duration = Duration::from_secs(60);

/// The delegate's Service, as an APIService names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Service port.
    pub port: u16,
}

impl ServiceRef {
    /// Parses `namespace/name:port` (the port defaults to 443, as in an APIService).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, rest) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected namespace/name[:port]"))?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{text:?}: invalid port {port:?}"))?,
            ),
            None => (rest, 443),
        };
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(namespace) || !label(name) {
            return Err(format!("{text:?}: namespace and name must be DNS-1123 labels"));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port,
        })
    }

    /// The name its serving certificate is verified for: `<name>.<namespace>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// How ebb authenticates to the delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegateAuth {
    /// As the caller: front-proxy headers over this client certificate and key (PEM files).
    FrontProxy {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// As ebb's ServiceAccount: the token in this file as a bearer token.
    ServiceAccount {
        /// The token file (the kubelet rotates it).
        token_file: PathBuf,
    },
}

/// Settings of the chain to a delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateOptions {
    /// Where the delegate is.
    pub service: ServiceRef,
    /// The CA bundle (PEM file) its serving certificate chains to.
    pub ca: Option<PathBuf>,
    /// Accept any serving certificate (only what the APIService itself said).
    pub insecure: bool,
    /// As whom ebb asks.
    pub auth: DelegateAuth,
}

/// The HTTPS client built from the files, and what they were.
struct Loaded {
    at: Instant,
    digest: u64,
    http: HttpsClient,
}

/// Forwards requests to the delegate's Service (see the module documentation).
pub struct ServiceDelegate {
    services: Api<Service>,
    options: DelegateOptions,
    loaded: Mutex<Option<Loaded>>,
    address: Mutex<Option<(Instant, String)>>,
}

/// Why the delegate could not be asked (shown to the caller: names files, never their contents).
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("Service {service}: {message}")]
    Service { service: String, message: String },
}

impl ServiceDelegate {
    /// A delegate; files and the Service are read at the first request.
    pub fn new(client: Client, options: DelegateOptions) -> Self {
        tracing::info!(
            delegate = %options.service,
            auth = match options.auth {
                DelegateAuth::FrontProxy { .. } => "front-proxy (the caller's identity)",
                DelegateAuth::ServiceAccount { .. } => "ebb's ServiceAccount",
            },
            "metrics adapter: requests for metrics ebb does not own go to the delegate"
        );
        Self {
            services: Api::namespaced(client, &options.service.namespace),
            options,
            loaded: Mutex::new(None),
            address: Mutex::new(None),
        }
    }

    fn read(path: &PathBuf) -> Result<String, Problem> {
        std::fs::read_to_string(path).map_err(|source| Problem::Read {
            path: path.clone(),
            source,
        })
    }

    /// The client, rebuilt when the files changed (read at most every minute unless `force`).
    fn client(&self, force: bool) -> Result<HttpsClient, Problem> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = loaded.as_ref()
            && !force
            && l.at.elapsed() < FILES_REFRESH
        {
            return Ok(l.http.clone());
        }
        let ca = self.options.ca.as_ref().map(Self::read).transpose()?;
        let identity = match &self.options.auth {
            DelegateAuth::FrontProxy { cert, key } => Some((Self::read(cert)?, Self::read(key)?)),
            DelegateAuth::ServiceAccount { .. } => None,
        };
        let mut hasher = DefaultHasher::new();
        (&ca, &identity).hash(&mut hasher);
        let digest = hasher.finish();
        if let Some(l) = loaded.as_mut()
            && l.digest == digest
        {
            l.at = Instant::now();
            return Ok(l.http.clone());
        }
        let trust = if self.options.insecure {
            Arc::new(LeaderTrust::any())
        } else {
            let trust = LeaderTrust::verified(&self.options.service.server_name())
                .map_err(|e| Problem::Tls(e.to_string()))?;
            let ca = ca
                .as_deref()
                .ok_or_else(|| Problem::Tls("no CA bundle for the delegate".into()))?;
            trust.set_ca_pem(ca).map_err(|e| Problem::Tls(e.to_string()))?;
            Arc::new(trust)
        };
        let config = match identity {
            None => trust.client_config(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| Problem::Tls("the client certificate is not PEM".into()))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|_| Problem::Tls("the client key is not an unencrypted PEM key".into()))?;
                trust.client_config_with_identity(chain, key)
            }
        }
        .map_err(|e| Problem::Tls(e.to_string()))?;
        let http = pooled_client(config, Some(DELEGATE_TIMEOUT));
        *loaded = Some(Loaded {
            at: Instant::now(),
            digest,
            http: http.clone(),
        });
        Ok(http)
    }

    /// `clusterIP:port` of the Service, as found at most 30 s ago.
    async fn address(&self) -> Result<String, Problem> {
        if let Some((at, address)) = self
            .address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            && at.elapsed() < SERVICE_CACHE
        {
            return Ok(address);
        }
        let service = &self.options.service;
        let problem = |message: String| Problem::Service {
            service: service.to_string(),
            message,
        };
        let found = self
            .services
            .get_opt(&service.name)
            .await
            .map_err(|e| problem(format!("cannot be read: {e}")))?
            .ok_or_else(|| problem("not found".into()))?;
        let address = service_address(&found, service.port).map_err(problem)?;
        *self.address.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), address.clone()));
        Ok(address)
    }

    async fn attempt(&self, request: &DelegateRequest, force: bool) -> Result<DelegateAnswer, Problem> {
        let http = self.client(force)?;
        let address = self.address().await?;
        let shown = format!("https://{address}{}", request.path_and_query);
        let uri: Uri = shown
            .parse()
            .map_err(|e| Problem::Tls(format!("invalid delegate URL: {e}")))?;
        let mut outgoing = Request::get(uri)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .body(Empty::<Bytes>::new())
            .map_err(|e| Problem::Tls(format!("cannot build the request: {e}")))?;
        match &self.options.auth {
            DelegateAuth::FrontProxy { .. } => outgoing.headers_mut().extend(request.front_proxy.clone()),
            DelegateAuth::ServiceAccount { token_file } => {
                let token = Self::read(token_file)?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| Problem::Tls("the ServiceAccount token is not a header value".into()))?;
                value.set_sensitive(true);
                outgoing.headers_mut().insert(header::AUTHORIZATION, value);
            }
        }
        let response = send(&http, outgoing, &shown, None)
            .await
            .map_err(|e| Problem::Tls(e.to_string()))?;
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = Limited::new(response.into_body(), MAX_DELEGATE_ANSWER)
            .collect()
            .await
            .map_err(|e| Problem::Tls(format!("reading the answer of {shown}: {e}")))?
            .to_bytes();
        Ok(DelegateAnswer {
            status,
            content_type,
            body,
        })
    }
}

/// Where a Service is reached at `port`: its cluster IP (brackets for IPv6).
pub fn service_address(service: &Service, port: u16) -> Result<String, String> {
    let spec = service.spec.as_ref().ok_or("has no spec")?;
    if !spec.ports.iter().flatten().any(|p| p.port == i32::from(port)) {
        return Err(format!("has no port {port}"));
    }
    let ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or("has no cluster IP")?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("cluster IP {ip:?} is no IP"))?;
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

#[async_trait]
impl Delegate for ServiceDelegate {
    async fn get(&self, request: DelegateRequest) -> Result<DelegateAnswer, DelegateError> {
        let unavailable = |e: Problem| DelegateError::Unavailable(format!("{}: {e}", self.options.service));
        let first = tokio::time::timeout(DELEGATE_TIMEOUT, self.attempt(&request, false)).await;
        match first {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                // Files may have been rotated and the Service moved: read them again for the
                // next request, answer this one with the failure.
                *self.address.lock().unwrap_or_else(PoisonError::into_inner) = None;
                if let Some(l) = self
                    .loaded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    l.at = Instant::now().checked_sub(FILES_REFRESH).unwrap_or(l.at);
                }
                Err(unavailable(e))
            }
            Err(_) => Err(DelegateError::Unavailable(format!(
                "{}: no answer within {} s",
                self.options.service,
                DELEGATE_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_delegate_service_is_namespace_name_and_port() {
        let keda = ServiceRef::parse("keda/keda-operator-metrics-apiserver:443").unwrap();
        assert_eq!(keda.namespace, "keda");
        assert_eq!(keda.name, "keda-operator-metrics-apiserver");
        assert_eq!(keda.server_name(), "keda-operator-metrics-apiserver.keda.svc");
        assert_eq!(ServiceRef::parse("team-a/ebb-metrics").unwrap().port, 443);
        for bad in [
            "ebb-metrics",
            "a/b:0",
            "a/b:x",
            "a/b:70000",
            "A/b",
            "a/b.c",
            "a//b",
            "/b",
            "a/-b",
            "a/b/c",
        ] {
            assert!(ServiceRef::parse(bad).is_err(), "{bad}");
        }
    }

    fn service(cluster_ip: &str, port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "m", "namespace": "n"},
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": port}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_delegate_is_reached_at_its_cluster_ip() {
        assert_eq!(
            service_address(&service("10.96.0.12", 443), 443).unwrap(),
            "10.96.0.12:443"
        );
        assert_eq!(
            service_address(&service("fd00::12", 443), 443).unwrap(),
            "[fd00::12]:443"
        );
        assert!(service_address(&service("10.96.0.12", 443), 6443).is_err());
        assert!(service_address(&service("None", 443), 443).is_err());
        assert!(service_address(&service("", 443), 443).is_err());
    }
}
